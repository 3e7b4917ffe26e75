# plant-b's sensors: every 1-Wire probe on its bus, and the Pi's health.
from fieldstation.sensors.onewire import Onewire
from fieldstation.sensors.pi import Pi

sensors = {
    "Chillers": [Onewire(name="chillers", interval=30)],
    "Station": [Pi(name="pi", mounts=["/", "/srv/data"])],
}
