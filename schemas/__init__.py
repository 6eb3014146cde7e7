"""The wire contract: event envelope and types, the event-id codec, JSON Schemas."""
