# The example rendered into provisioning/example/: the bundled example config.py's sensors plus the hardware
# drivers it keeps commented out (a UPS through NUT, an energy meter), so that every dashboard appears.
from fieldstation.example_config import sensors as example
from fieldstation.sensors.modbus import Modbus
from fieldstation.sensors.nut import Nut

sensors = {
    **example,
    "UPS": [Nut(name="ups", ups="eaton5px", description="Server-room UPS", interval=5)],
    "Energy": [Modbus(name="mains_meter", model="orno_we515", port="/dev/ttyUSB0", description="Mains", interval=10)],
}
