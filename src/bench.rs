//! Message-to-answer benchmark against the Rocket.Chat simulator.
