"""The Discord adapter: a thin layer of commands, views and replies over the search service."""
