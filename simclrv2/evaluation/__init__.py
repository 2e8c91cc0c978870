"""Representation quality the way the field reports it: kNN and linear evaluation."""
