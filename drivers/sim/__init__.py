"""Event-level simulated devices for the demo and tests: a card reader, a vehicle lane with a
barrier, and a camera that reads plates, drawing from one deterministic population."""
