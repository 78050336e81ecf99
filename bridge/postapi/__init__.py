"""The Post API side: its documented rules, the five methods' declarations, rows, CSV bodies, the uploader."""
