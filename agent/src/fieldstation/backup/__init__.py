"""Backups to an SMB share from user space, rotation, restore and the weekly restore drill.

``fieldstation backup``, ``fieldstation backup verify`` and ``fieldstation restore`` (see :mod:`.cli`). Light to
import: smbprotocol and the InfluxDB tooling load when a command runs. Why user-space SMB and not a kernel CIFS
mount: docs/decisions/0003-backup-over-user-space-smb.md.
"""
