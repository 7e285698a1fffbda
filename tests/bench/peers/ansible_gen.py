#!/usr/bin/env python3
"""Ansible peer of `siteflow-bench ssh`: writes the inventory, playbook and empty config.

Run by `siteflow-bench ssh --peer ansible` (with any python3; stdlib only) as

    ansible_gen.py --hosts-json HOSTS.json --commands N --out DIR

HOSTS.json is a list of objects {name, ip, user, private_key_file, known_hosts}. Written
into DIR:

  inventory.ini  one line per host: ansible_host = ip, ansible_user, the private key, and
                 ansible_ssh_common_args='-o UserKnownHostsFile=<known_hosts>
                 -o StrictHostKeyChecking=yes' (strict checking against the test net's file)
  playbook.yml   one play on all hosts, gather_facts: false, N tasks
                 `ansible.builtin.command: true`; nothing else set, so Ansible's defaults
                 apply (linear strategy, forks 5, the ssh connection plugin with its
                 default ControlPersist=60s, no pipelining)
  ansible.cfg    empty: ANSIBLE_CONFIG points at it so that no other config file applies

Prints one line `PEER_FILES {json}` with the paths.
"""

import argparse
import json
import os
import shlex


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts-json", required=True)
    p.add_argument("--commands", type=int, default=50)
    p.add_argument("--out", required=True)
    a = p.parse_args()

    with open(a.hosts_json, encoding="utf-8") as f:
        hosts = json.load(f)
    if not hosts:
        raise SystemExit("no hosts")
    os.makedirs(a.out, exist_ok=True)

    lines = ["[bench]"]
    for h in hosts:
        common = "-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes".format(
            shlex.quote(h["known_hosts"])
        )
        lines.append(
            "{name} ansible_host={ip} ansible_user={user} "
            "ansible_ssh_private_key_file={key} ansible_ssh_common_args='{common}'".format(
                name=h["name"],
                ip=h["ip"],
                user=h["user"],
                key=h["private_key_file"],
                common=common,
            )
        )
    inventory = os.path.join(a.out, "inventory.ini")
    with open(inventory, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")

    # JSON is YAML: the playbook needs no YAML library.
    play = {
        "name": "siteflow-bench ssh peer: {} commands on {} hosts".format(a.commands, len(hosts)),
        "hosts": "bench",
        "gather_facts": False,
        "tasks": [
            {"name": "c{}".format(i), "ansible.builtin.command": "true"}
            for i in range(a.commands)
        ],
    }
    playbook = os.path.join(a.out, "playbook.yml")
    with open(playbook, "w", encoding="utf-8") as f:
        json.dump([play], f, indent=1)
        f.write("\n")

    cfg = os.path.join(a.out, "ansible.cfg")
    with open(cfg, "w", encoding="utf-8") as f:
        f.write("")

    print("PEER_FILES " + json.dumps({"inventory": inventory, "playbook": playbook, "config": cfg}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
