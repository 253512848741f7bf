"""Front-ends: models → `SPAGraph`. They describe; they never decide coupling (that is `spa_keras.ops`)."""
