"""Fuzz run of every parser of untrusted bytes (issue 14): ``make fuzz``."""
