import click


@click.command("demo")
def demo_cmd() -> None:
    """(work in progress)"""
