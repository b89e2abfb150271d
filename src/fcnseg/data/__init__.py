"""Data: datasets by format, the drawn demo scenes, image I/O and paired transforms."""
