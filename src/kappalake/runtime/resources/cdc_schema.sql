CREATE TABLE IF NOT EXISTS merchants (
  merchant_id text PRIMARY KEY, name text NOT NULL, category text NOT NULL, country text NOT NULL,
  risk_tier integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS orders (
  order_id bigint PRIMARY KEY, merchant_id text NOT NULL, customer_id text NOT NULL, status text NOT NULL,
  amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE merchants REPLICA IDENTITY FULL;
ALTER TABLE orders REPLICA IDENTITY FULL;
