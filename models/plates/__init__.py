"""Plate recognition: detection, recognition, Chinese plate grammar, voting."""
