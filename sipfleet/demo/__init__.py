"""``sipfleet demo``: sipfleet with built-in back ends and a caller (see sipfleet.cli.demo)."""
