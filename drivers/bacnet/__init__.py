"""BACnet/IP device driver on bacpypes3: ReadPropertyMultiple, COV, WriteProperty with priority."""
