#!/usr/bin/env python3
"""Writes the benchmark's mail store and passwd-file straight to disk (no IMAP APPEND, no LDA): seconds, not minutes.

For each of N users (user names and passwords from Python format strings, index 1..N):
  ROOT/<user>/Maildir/{cur,new,tmp}
  SMALL small text messages in cur/ (UIDs 1..SMALL once Dovecot syncs: file names start with increasing times)
  one large message (BIG bytes) as the last message, a HARD LINK of ROOT/.big-message: one copy on disk and in
  the page cache however many users there are.
Everything is owned by UID:GID (the mail user of the Dovecot userdb). Also writes PASSWD (Dovecot passwd-file,
{PLAIN} scheme) and USERLIST (one user per line, for `doveadm -F`).
"""
import argparse
import os


def write(path, data, uid, gid):
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, uid, gid)


def small_message(user, i, when):
    body = "".join(f"Line {n} of small message {i} for {user}: the quick brown fox jumps over the lazy dog.\n"
                   for n in range(1, 13))
    return (f"From: Bench <bench@example.test>\n"
            f"To: {user} <{user}@example.test>\n"
            f"Subject: Small message {i} for {user}\n"
            f"Date: {when}\n"
            f"Message-ID: <small-{i}-{user}@example.test>\n"
            f"MIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=us-ascii\n\n{body}").encode("ascii")


def big_message(size):
    header = (b"From: Bench <bench@example.test>\n"
              b"To: Everyone <all@example.test>\n"
              b"Subject: Big message\n"
              b"Date: Mon, 01 Jan 2024 00:00:00 +0000\n"
              b"Message-ID: <big@example.test>\n"
              b"MIME-Version: 1.0\n"
              b"Content-Type: text/plain; charset=us-ascii\n\n")
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\n"  # 77 bytes
    lines = max(1, (size - len(header)) // len(line))
    return header + line * lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--small", type=int, default=20)
    p.add_argument("--big", type=int, default=5 * 1024 * 1024, help="size of the large message in bytes")
    p.add_argument("--uid", type=int, required=True)
    p.add_argument("--gid", type=int, required=True)
    p.add_argument("--user-format", default="user{0:04d}")
    p.add_argument("--password-format", default="pass{0:04d}")
    p.add_argument("--passwd", required=True)
    p.add_argument("--userlist", required=True)
    a = p.parse_args()

    os.makedirs(a.root, exist_ok=True)
    os.chown(a.root, a.uid, a.gid)
    os.chmod(a.root, 0o755)
    big_path = os.path.join(a.root, ".big-message")
    big = big_message(a.big)
    write(big_path, big, a.uid, a.gid)
    os.chmod(big_path, 0o600)

    base = 1_700_000_000  # maildir names carry the delivery time; Dovecot gives new UIDs in that order
    users = []
    with open(a.passwd, "w") as passwd:
        for n in range(1, a.users + 1):
            user = a.user_format.format(n)
            users.append(user)
            passwd.write(f"{user}:{{PLAIN}}{a.password_format.format(n)}\n")
            home = os.path.join(a.root, user)
            maildir = os.path.join(home, "Maildir")
            for d in (home, maildir, *(os.path.join(maildir, s) for s in ("cur", "new", "tmp"))):
                os.mkdir(d, 0o700)
                os.chown(d, a.uid, a.gid)
            cur = os.path.join(maildir, "cur")
            for i in range(1, a.small + 1):
                data = small_message(user, i, "Mon, 01 Jan 2024 00:%02d:%02d +0000" % (i // 60 % 60, i % 60))
                write(os.path.join(cur, f"{base + i}.M{i}P1.bench,S={len(data)}:2,S"), data, a.uid, a.gid)
            os.link(big_path, os.path.join(cur, f"{base + a.small + 1}.M{a.small + 1}P1.bench,S={len(big)}:2,"))
    with open(a.userlist, "w") as f:
        f.write("\n".join(users) + "\n")


if __name__ == "__main__":
    main()
