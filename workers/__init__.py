"""Producers of stream events: the job consumer, generators, the transactional writer,
and the publisher SDK for backend services."""
