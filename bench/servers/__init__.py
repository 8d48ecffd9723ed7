"""Servers on 127.0.0.1 that speak a real service's documented protocol, for the benches and the tests."""
