# The frontend image, built FROM scratch like raft-node.Dockerfile (see
# there): the frontend and the bazar CLI, exactly the shared libraries they
# need, the user bazar (10001). The frontend is stateless: its data/ is only
# a writable working directory, not a volume.
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /data/
USER 10001:10001
WORKDIR /data
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/bazar", "--timeout", "2", "--frontend", "http://127.0.0.1:8080", "health"]
ENTRYPOINT ["/usr/local/bin/frontend"]
# Compose adds --nodes with the raft nodes' addresses; the token that opens the
# nodes' /mux comes from the BAZAR_FRONTEND_TOKEN environment variable. The
# health check fails while no node answers the frontend's probes (503).
CMD ["--listen", "0.0.0.0:8080"]
