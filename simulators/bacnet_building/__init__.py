"""A building on BACnet/IP (bacpypes3): an air-handling unit and lighting zones, with COV."""
