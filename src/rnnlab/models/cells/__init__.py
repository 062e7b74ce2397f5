"""The recurrent cells the encoder can stack, and what they share (precision, the scan)."""
