"""OSDP card readers, driven as a Control Panel on libosdp."""
