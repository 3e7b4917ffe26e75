# The image's starter config.py: simulated sensors and the station itself, so a freshly flashed card shows live
# readings in Grafana before anything is wired up. Your own config.py replaces it through Ansible (agent_config_file
# in the inventory); start from agent/src/fieldstation/example_config.py and docs/sensors/.

from fieldstation.sensors.pi import Pi
from fieldstation.sensors.simulated import Simulated

sensors = {
    "Demo (simulated)": [
        Simulated(
            name="demo_temp",
            description="A simulated temperature (replace this config.py with your own)",
            unit="°C",
            signal="random_walk",
            value=21.0,
            amplitude=0.02,
            interval=5,
            precision=2,
            valid_range=(-20, 60),
        ),
        Simulated(
            name="demo_humidity",
            description="A simulated relative humidity",
            unit="%",
            signal="sine",
            value=45.0,
            amplitude=5.0,
            period=600,
            interval=5,
            precision=1,
        ),
    ],
    "Station": [
        Pi(name="pi", description="This station", mounts=["/"], interval=10),
    ],
}
