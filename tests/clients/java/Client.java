// Client matrix row: Java's HttpClient with its defaults (HTTP/2 preferred,
// the default ProxySelector, the default SSLContext). "forward" goes through
// cacheow as configured by system properties only (-Dhttps.proxyHost …,
// -Djavax.net.ssl.trustStore); "selector" is the same calls with
// ProxySelector.of(cacheow) in code instead of the proxy properties;
// "reverse" talks plain HTTP to cacheow's reverse listeners. Prints one
// JSON line, as ../python/common.py does.

import java.net.InetSocketAddress;
import java.net.ProxySelector;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.concurrent.Callable;

public class Client {
    private static final String CHAT =
            "{\"model\":\"gpt-test\",\"messages\":[{\"role\":\"user\",\"content\":\"Stream from Java\"}],\"stream\":true}";

    private final HttpClient client;
    private final List<String> calls = new ArrayList<>();

    private Client(HttpClient client) {
        this.client = client;
    }

    public static void main(String[] args) {
        String mode = args[0];
        HttpClient http = HttpClient.newHttpClient();
        if (mode.equals("selector")) {
            // args: selector PROXY_HOST PROXY_PORT httpbin plain llm
            InetSocketAddress proxy = new InetSocketAddress(args[1], Integer.parseInt(args[2]));
            http = HttpClient.newBuilder().proxy(ProxySelector.of(proxy)).build();
            args = new String[] {mode, args[3], args[4], args[5]};
        }
        Client c = new Client(http);
        switch (mode) {
            case "forward", "selector" -> {
                String httpbin = args[1], plain = args[2], llm = args[3];
                c.call("get", () -> c.get(httpbin + "/anything/java?q=1"));
                c.call("post_json", () -> c.post(httpbin + "/anything/java", "{\"a\":1}"));
                c.call("plain_http", () -> c.get(plain + "/anything/java-plain"));
                c.call("sse_bytes", () -> c.post(llm + "/v1/chat/completions", CHAT));
            }
            case "reverse" -> {
                String httpbin = args[1], llm = args[2];
                c.call("get", () -> c.get(httpbin + "/anything/java-reverse?q=1"));
                c.call("post_json", () -> c.post(httpbin + "/anything/java-reverse", "{\"a\":1}"));
                c.call("sse_bytes", () -> c.post(llm + "/v1/chat/completions", CHAT));
            }
            default -> throw new IllegalArgumentException("mode: forward, selector or reverse");
        }
        System.out.println("{\"calls\":[" + String.join(",", c.calls) + "]}");
    }

    private HttpResponse<byte[]> get(String url) throws Exception {
        HttpRequest request = HttpRequest.newBuilder(URI.create(url)).build();
        return client.send(request, HttpResponse.BodyHandlers.ofByteArray());
    }

    private HttpResponse<byte[]> post(String url, String json) throws Exception {
        HttpRequest request = HttpRequest.newBuilder(URI.create(url))
                .header("content-type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(json))
                .build();
        return client.send(request, HttpResponse.BodyHandlers.ofByteArray());
    }

    // A call that throws is reported, not fatal, so the others still run.
    private void call(String name, Callable<HttpResponse<byte[]>> send) {
        long started = System.nanoTime();
        try {
            HttpResponse<byte[]> r = send.call();
            calls.add("{\"name\":" + str(name)
                    + ",\"status\":" + r.statusCode()
                    + ",\"version\":" + str(r.version().toString())
                    + ",\"source\":" + str(r.headers().firstValue("x-cacheow-source").orElse(null))
                    + ",\"function\":" + str(r.headers().firstValue("x-cacheow-function").orElse(null))
                    + ",\"body_b64\":" + str(Base64.getEncoder().encodeToString(r.body()))
                    + ",\"elapsed_ms\":" + elapsed(started) + "}");
        } catch (Exception e) {
            calls.add("{\"name\":" + str(name) + ",\"error\":" + str(e.toString())
                    + ",\"elapsed_ms\":" + elapsed(started) + "}");
        }
    }

    private static String elapsed(long started) {
        return Double.toString((System.nanoTime() - started) / 1e6);
    }

    private static String str(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder out = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (ch < 0x20) {
                        out.append(String.format("\\u%04x", (int) ch));
                    } else {
                        out.append(ch);
                    }
                }
            }
        }
        return out.append('"').toString();
    }
}
