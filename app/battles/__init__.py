"""Live battles (Chatbot Arena style) on a project's own endpoint versions: settings, service, streaming, pages."""
