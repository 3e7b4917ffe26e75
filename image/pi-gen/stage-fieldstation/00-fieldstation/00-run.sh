#!/bin/bash -e
# pi-gen sub-stage: runs ansible/site.yml, the playbook every station runs, into pi-gen's root filesystem over the
# chroot connection, with image/inventory.yml's values (placeholder secrets, no site values), as image/build.yml does.
# Runs on the build host (this is 00-run.sh, not 00-run-chroot.sh); needs Ansible there (see image/README.md).
FIELDSTATION_REPO="${FIELDSTATION_REPO:-$(realpath "$(dirname "${BASH_SOURCE[0]}")/../../../..")}"
ANSIBLE_PLAYBOOK="${ANSIBLE_PLAYBOOK:-${FIELDSTATION_REPO}/.venv-ansible/bin/ansible-playbook}"
release="${STAGE_WORK_DIR}/fieldstation-release.json"
cat >"${release}" <<JSON
{"firstboot_release": {
  "version": "$(sed -n 's/^version *= *"\(.*\)"/\1/p' "${FIELDSTATION_REPO}/agent/pyproject.toml")",
  "revision": "$(git -C "${FIELDSTATION_REPO}" describe --always --dirty --abbrev=12)",
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"}}
JSON
# The labels pi-gen's export-image/prerun.sh gives the partitions (mkdosfs -n bootfs, mkfs.ext4 -L rootfs), not
# image/assemble's: the firstboot role mounts the boot partition by this label.
labels='{"firstboot_boot_label": "bootfs", "firstboot_root_label": "rootfs"}'
ANSIBLE_CONFIG="${FIELDSTATION_REPO}/ansible/ansible.cfg" "${ANSIBLE_PLAYBOOK}" \
  -i "${FIELDSTATION_REPO}/image/inventory.yml" "${FIELDSTATION_REPO}/ansible/site.yml" \
  -e "ansible_host=${ROOTFS_DIR}" -e "@${release}" -e "${labels}" ${FIELDSTATION_ANSIBLE_ARGS:-}
