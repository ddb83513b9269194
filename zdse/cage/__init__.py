"""The cage: the ROUTER/PUB proxy, its pure core and what an operator adds around it."""
