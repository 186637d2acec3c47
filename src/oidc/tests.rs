//! Unit tests of the OIDC relying party (pure checks and against the rogue provider).
