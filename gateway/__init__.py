"""citytwin gateway runtime."""
