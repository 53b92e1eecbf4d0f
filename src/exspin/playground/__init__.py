"""`exspin serve`: a local web app to ask a database a question and to browse a run folder."""
