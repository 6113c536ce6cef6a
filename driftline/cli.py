"""The `driftline` command."""


def main() -> None:
    print("driftline")
