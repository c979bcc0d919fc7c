"""Exports for clinic staff: file formats (pure), building an export zip, signed download
links, purging, and the limit on exports running at once."""
