"""What the shop's blueprints share: errors, auth, pagination, caching, health."""
