"""Serial transport shared by the serial-line drivers (OSDP, Wiegand converters, Modbus RTU)."""
