"""Projects: settings, guidelines (versioned), membership, import."""
