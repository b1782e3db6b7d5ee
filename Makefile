# Switchboard — the two commands a fresh machine needs are `make run` and `make test`.
.PHONY: run stop test chaos bench check-deploy fmt lint

run:            ## infrastructure up, build, start all six services, wait until ready, print URLs
	bash scripts/dev-up.sh

stop:           ## stop services started with `scripts/dev-up.sh --detach`
	bash scripts/dev-down.sh

test:           ## the whole test suite against real PostgreSQL and RabbitMQ (what CI runs)
	bash scripts/test.sh

chaos:          ## the chaos group alone (make test runs it too): broker chaos, and the whole system under load through kill -9 of each service, a RabbitMQ restart and PostgreSQL stopped for 30 s
	bash scripts/ensure-infra.sh
	cargo build --workspace --bins --locked
	cargo nextest run --workspace --locked --test-threads 1 --no-capture -E 'binary(chaos)'

bench:          ## bus, /v1/me, Stripe webhook -> access, ticket intake, AI drafts and the services' memory, each beside a same-run baseline; ends with one table (target/bench-report/report.json)
	bash scripts/ensure-infra.sh
	bash scripts/clean-test-leftovers.sh
	rm -rf target/bench-report
	cargo bench -p sb-bus --bench bus --locked
	cargo bench -p gateway --bench me --locked
	cargo bench -p gateway --bench webhook --locked
	cargo bench -p gateway --bench tickets --locked
	cargo bench -p ai-assist --bench drafts --locked
	cargo build --release --locked --workspace --bins
	cargo bench -p system-tests --bench memory --locked
	cargo run -q --release --locked -p sb-testkit --bin bench-report

check-deploy:   ## validate docker-compose.yml and k8s/ without a Docker engine or cluster
	bash scripts/install-check-tools.sh
	bash scripts/check-deploy.sh

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets --locked -- -D warnings
