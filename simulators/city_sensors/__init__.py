"""Street sensors over CoAP: an air-quality station and a manhole level sensor."""
