"""CoAP device driver on aiocoap: GET, Observe, PUT/POST, JSON and CBOR payloads."""
