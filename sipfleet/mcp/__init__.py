"""The MCP server: sipfleet's control plane as tools and resources for AI agents.

One set of tools (``server.build_server``) over one narrow interface to the
running sipfleet (``backend.Backend``: a JSON-RPC call), served two ways:
``sipfleet mcp`` on stdio (``cli/mcp.py``, over the ctl socket or HTTP, as
every CLI verb finds the server) and streamable HTTP at ``/mcp`` on the
control HTTP server (``http.McpHttp``, in process). Guard rails
(``guard``) and the audit trail are the same on both.
"""
