#!/usr/bin/env python3
"""Writes a large entity data set of the portal model (schema/portal.cedarschema) for
the file source: accounts, users (each in one to three accounts, with a membership tag
per account), contacts, invoices and tickets, in Cedar's JSON entity format.

The default size is the issue 14 workload: 211,000 entities, about 29 MiB.

    scripts/gen-portal-entities.py OUT.json [--accounts N] [--seed S]

Every 1,000 accounts give 1,000 accounts, 1,000 users, 500 contacts, 7,000 invoices
and 1,050 tickets (10,550 entities); the default 20,000 accounts give 211,000.
Deterministic for a seed. The first account is `a0`, its owner `u0`, so a benchmark
can ask about known uids.
"""

import argparse
import json
import random

PERMISSIONS = [
    "profile", "contacts", "products", "manageproducts", "productsso", "domains",
    "managedomains", "invoices", "quotes", "tickets", "affiliates", "emails", "orders",
]
CATEGORIES = ["general", "product", "domain", "invoice", "support", "affiliate"]


def ref(ty, id_):
    # The schema says which attributes hold entities, so references are written in
    # the short form Cedar reads with a schema.
    return {"type": f"Portal::{ty}", "id": id_}


def uid(ty, id_):
    return {"type": f"Portal::{ty}", "id": id_}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--accounts", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    n_acc = args.accounts
    n_users = n_acc
    n_contacts = n_acc // 2
    entities = []

    # Each account's owner is the user with the same number (policies give the owner
    # everything through `owner`); every tenth user is also invited to another
    # account, with a few permissions there.
    memberships = {u: [] for u in range(n_users)}
    for u in range(n_users):
        accounts = [u] if u % 10 else [u, rng.randrange(n_acc)]
        for a in dict.fromkeys(accounts):
            perms = sorted(rng.sample(PERMISSIONS, rng.randint(1, 3)))
            cats = sorted(rng.sample(CATEGORIES, 1))
            memberships[u].append((a, perms, cats))

    for a in range(n_acc):
        attrs = {"id": f"a{a}", "name": f"Customer {a}", "owner": ref("User", f"u{a}")}
        if a % 2 == 0 and a < n_contacts:
            attrs["billingContact"] = ref("Contact", f"c{a}")
        entities.append({"uid": uid("Account", f"a{a}"), "attrs": attrs, "parents": []})
    for u in range(n_users):
        entities.append({
            "uid": uid("User", f"u{u}"),
            "attrs": {
                "email": f"u{u}@example.com",
                "disabled": rng.random() < 0.02,
                "twoFactorEnrolled": rng.random() < 0.5,
            },
            "parents": [uid("Account", f"a{a}") for a, _, _ in memberships[u]],
            "tags": {
                f"a{a}": {"permissions": list(p), "emailCategories": list(c)}
                for a, p, c in memberships[u]
            },
        })
    for c in range(n_contacts):
        a = c
        entities.append({
            "uid": uid("Contact", f"c{c}"),
            "attrs": {
                "account": ref("Account", f"a{a}"),
                "email": f"c{c}@example.com",
                "emailCategories": sorted(rng.sample(CATEGORIES, 1)),
            },
            "parents": [],
        })
    for i in range(7 * n_acc):
        entities.append({
            "uid": uid("Invoice", f"i{i}"),
            "attrs": {"account": ref("Account", f"a{i // 7}"), "total": rng.randint(100, 99_999)},
            "parents": [],
        })
    for t in range(n_acc * 105 // 100):
        a = rng.randrange(n_acc)
        attrs = {"account": ref("Account", f"a{a}"), "subject": f"T{t}"}
        if t % 2 == 0:
            attrs["openedBy"] = ref("User", f"u{a}")
        elif a < n_contacts:
            attrs["contact"] = ref("Contact", f"c{a}")
        entities.append({"uid": uid("Ticket", f"t{t}"), "attrs": attrs, "parents": []})

    with open(args.out, "w") as f:
        f.write("[\n")
        for i, e in enumerate(entities):
            f.write(json.dumps(e, separators=(",", ":")))
            f.write(",\n" if i + 1 < len(entities) else "\n")
        f.write("]\n")


if __name__ == "__main__":
    main()
