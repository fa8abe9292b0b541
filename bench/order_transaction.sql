-- pgbench script: the SQL of one order (two products), statement for statement as the shop sends it
-- (simple protocol, like psycopg2; the pool's pre-ping SELECT 1 left out): the buyer's row for the
-- token, the Idempotency-Key claimed in its own short transaction, then the order's transaction,
-- which holds the claim, locks the products, reads the buyer again (the claim's commit expired it),
-- writes the order, takes the stock (one UPDATE a product), writes the items, the email's outbox
-- row and the answer. Variables from `pgbench -D`: user_id (the buyer), products (how many ids, from 1).
\set a random(1, :products)
\set b (:a % :products) + 1
\set nonce random(1, 1000000000000)
SELECT id, username, email, password_hash, first_name, last_name, phone_number, is_staff, is_active, date_joined FROM users WHERE id = :user_id;
INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response_body, created_at) VALUES (:user_id, 'pgbench-' || :client_id || '-' || :nonce, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', NULL, NULL, now()) RETURNING id AS key_id, quote_literal(created_at) AS key_created_at \gset
BEGIN;
SELECT created_at FROM idempotency_keys WHERE id = :key_id AND status_code IS NULL FOR UPDATE;
SELECT products.id, products.name, products.description, products.price, products.stock, products.image, products.category_id, products.hidden, products.created_at, products.updated_at, categories.id, categories.name, categories.description FROM products JOIN categories ON categories.id = products.category_id WHERE products.id IN (:a, :b) ORDER BY products.id FOR UPDATE OF products;
SELECT id, username, email, password_hash, first_name, last_name, phone_number, is_staff, is_active, date_joined FROM users WHERE id = :user_id;
INSERT INTO orders (user_id, status, total, created_at, updated_at) VALUES (:user_id, 'pending', 10.00, now(), now()) RETURNING id \gset
UPDATE products SET stock = stock - 1, updated_at = now() WHERE id = :a;
UPDATE products SET stock = stock - 1, updated_at = now() WHERE id = :b;
INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (:id, :a, 1, 5.00), (:id, :b, 1, 5.00);
INSERT INTO email_outbox (order_id, status, attempts, last_error, next_attempt_at, created_at, sent_at) VALUES (:id, 'pending', 0, NULL, now(), now(), NULL) RETURNING id;
UPDATE idempotency_keys SET status_code = 201, response_body = convert_to(repeat('x', 900), 'UTF8') WHERE id = :key_id AND created_at = :key_created_at AND status_code IS NULL;
END;
