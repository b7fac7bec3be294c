import click


@click.command("top")
def top_cmd() -> None:
    """(work in progress)"""
