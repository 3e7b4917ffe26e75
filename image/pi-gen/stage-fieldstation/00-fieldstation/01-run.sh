#!/bin/bash -e
# Wi-Fi as the first boot configures it: `fieldstation firstboot` writes a NetworkManager connection from
# fieldstation.txt (wifi_ssid, wifi_password, wifi_country). pi-gen's stage2 (02-net-tweaks), built without
# WPA_COUNTRY, switches NetworkManager's Wi-Fi off (WirelessEnabled=false), which also keeps the radio rfkill-blocked:
# that connection would never come up. Switch it back on; NetworkManager then lifts the soft block itself and
# connects when, and only when, the first boot has written a connection. Without one the radio stays idle.
state="${ROOTFS_DIR}/var/lib/NetworkManager/NetworkManager.state"
if [ -d "${ROOTFS_DIR}/var/lib/NetworkManager" ]; then
  printf '[main]\nWirelessEnabled=true\n' >"${state}"
fi
