# plant-a's sensors (this station only; the fleet's other stations have their own config.py).
from fieldstation.sensors.nut import Nut
from fieldstation.sensors.onewire import Onewire
from fieldstation.sensors.pi import Pi

sensors = {
    "Boilers": [
        Onewire(name="boiler_flow", id="28-0316a2790bff", interval=30, limits={"temperature": (40, 80)}),
        Onewire(name="boiler_return", id="28-0316a2791c1a", interval=30),
    ],
    "Power": [Nut(name="ups", ups="ups")],
    "Station": [Pi(name="pi", mounts=["/", "/srv/data"])],
}
