"""exspin: text-to-SQL by self-play fine-tuning with execution feedback (ExSPIN)."""

__version__ = "0.1.0"
