"""Orders: placing them atomically, their lifecycle, and the email each one owes."""
