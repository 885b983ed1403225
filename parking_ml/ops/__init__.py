"""Operations: the local stack's process supervisor and the Airflow REST client. Not part of the ML core."""
