"""Schema hints: what the prompt tells the model about the database."""
