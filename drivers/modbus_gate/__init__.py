"""Vehicle barriers driven through RS-485 relay/IO boards over Modbus RTU (pymodbus)."""
