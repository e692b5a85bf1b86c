"""The gateway as an OAuth 2.0 authorization server for its consumers: client credentials only."""
