"""Small shared helpers (downloads, archives)."""
