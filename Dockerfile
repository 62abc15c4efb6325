FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY trainer ./trainer
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
# The CPU build of torch by default; a GPU image (docker-compose's ray-gpu-worker) passes a CUDA index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# ray: the worker submits jobs with launcher ray, and the ray profile's nodes run this image
RUN pip install --no-cache-dir torch==2.13.0 --index-url "$TORCH_INDEX_URL" \
 && pip install --no-cache-dir -e ".[train,ray]"
EXPOSE 8000
CMD ["rankforge", "serve", "--host", "0.0.0.0"]
