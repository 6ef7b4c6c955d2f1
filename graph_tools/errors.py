"""The one error type graph_tools raises for models it cannot explain, with the reason in words."""


class GraphError(ValueError):
    """A model, or a request on it, that the graph transforms cannot handle."""
