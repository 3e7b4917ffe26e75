# lab-c's sensors: an experiment's simulated signals until its hardware arrives, and the Pi's health.
from fieldstation.sensors.pi import Pi
from fieldstation.sensors.simulated import Simulated

sensors = {
    "Experiment": [
        Simulated(name="chamber_temp", unit="K", signal="sine", value=293.0, amplitude=0.5, interval=5),
        Simulated(name="chamber_pressure", unit="mbar", signal="ramp", interval=5),
    ],
    "Station": [Pi(name="pi", mounts=["/", "/srv/data"])],
}
