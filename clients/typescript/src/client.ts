/**
 * A typed client of the shop's API for web front ends.
 *
 * Every path, parameter, body and answer is typed by `shop-api-schema`: the types openapi-typescript
 * generates from the shop's OpenAPI document (`npm run generate` writes generated/schema.d.ts from a
 * running shop). Requests are sent by openapi-fetch. A change of the document that breaks this file
 * fails `tsc --noEmit` (tests/test_generated_clients.py, in CI).
 */
import createClient, { type Client, type Middleware } from "openapi-fetch";
import type { paths } from "shop-api-schema";

type Json<T> = T extends { content: { "application/json": infer Body } } ? Body : never;

export type TokenPair = Json<paths["/api/token/"]["post"]["responses"][200]>;
export type Product = Json<paths["/api/products/{product_id}/"]["get"]["responses"][200]>;
export type ProductQuery = NonNullable<paths["/api/products/"]["get"]["parameters"]["query"]>;
export type OrderLines = Json<NonNullable<paths["/api/orders/"]["post"]["requestBody"]>>["items"];
export type Order = Json<paths["/api/orders/"]["post"]["responses"][201]>;
export type ApiError = Json<paths["/api/orders/"]["post"]["responses"][422]>;

/** X-Pagination: the list's size and where this page is in it. */
export interface Pagination {
  total: number;
  total_pages: number;
  first_page?: number;
  last_page?: number;
  page?: number;
  previous_page?: number;
  next_page?: number;
}

/** A failed call: the HTTP status and the shop's error body. */
export class ShopApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: ApiError | undefined,
  ) {
    super(body?.message ?? `HTTP ${status}`);
  }
}

function orThrow<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.data === undefined) {
    throw new ShopApiError(result.response.status, result.error as ApiError | undefined);
  }
  return result.data;
}

export class ShopClient {
  readonly http: Client<paths>;
  private tokens: TokenPair | undefined;

  constructor(baseUrl: string) {
    this.http = createClient<paths>({ baseUrl });
    const bearer: Middleware = {
      onRequest: ({ request }) => {
        if (this.tokens) {
          request.headers.set("Authorization", `Bearer ${this.tokens.access}`);
        }
        return request;
      },
    };
    this.http.use(bearer);
  }

  async logIn(username: string, password: string): Promise<void> {
    this.tokens = orThrow(await this.http.POST("/api/token/", { body: { username, password } }));
  }

  /** A new pair for the refresh token; the old refresh token is spent. */
  async refresh(): Promise<void> {
    if (!this.tokens) throw new Error("log in first");
    this.tokens = orThrow(await this.http.POST("/api/token/refresh/", { body: { refresh: this.tokens.refresh } }));
  }

  async listProducts(query: ProductQuery = {}): Promise<{ products: Product[]; pagination: Pagination }> {
    const result = await this.http.GET("/api/products/", { params: { query } });
    const products = orThrow(result);
    const pagination = JSON.parse(result.response.headers.get("X-Pagination") ?? "{}") as Pagination;
    return { products, pagination };
  }

  /** The product, or `"unchanged"` when `etag` (from an earlier answer) still matches. */
  async getProduct(productId: number, etag?: string): Promise<{ product: Product; etag: string } | "unchanged"> {
    const result = await this.http.GET("/api/products/{product_id}/", {
      params: { path: { product_id: productId }, header: etag === undefined ? {} : { "If-None-Match": etag } },
    });
    if (result.response.status === 304) return "unchanged";
    return { product: orThrow(result), etag: result.response.headers.get("ETag") ?? "" };
  }

  /** Sent again with the same key (after a timeout, say), the order is made once. */
  async placeOrder(items: OrderLines, idempotencyKey: string): Promise<Order> {
    return orThrow(
      await this.http.POST("/api/orders/", {
        params: { header: { "Idempotency-Key": idempotencyKey } },
        body: { items },
      }),
    );
  }

  async cancelOrder(orderId: number): Promise<Order> {
    return orThrow(await this.http.POST("/api/orders/{order_id}/cancel/", { params: { path: { order_id: orderId } } }));
  }
}
